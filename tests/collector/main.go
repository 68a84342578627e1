// Command otelcol-clockprof is the OpenTelemetry Collector the OTLP tests run:
// clockprof sends it profiles over OTLP/HTTP (protobuf) and it writes what it
// received to a file, so the tests check clockprof's export against a real
// receiver (the Collector's own decoder and its checks) rather than against a
// decoder of our own.
//
// Why a build of our own: no prebuilt Collector can be downloaded on the
// project's machines, only Go modules, so `cargo xtask setup` builds this
// module (ensure_collector in xtask/src/setup.rs) with the machine's Go into
// the dev cache (<cache>/otelcol/<hash of go.mod, go.sum, main.go>/otelcol-clockprof)
// and `cargo xtask test` hands its path to the tests as CLOCKPROF_OTELCOL.
// It is what ocb (go.opentelemetry.io/collector/cmd/builder) would generate
// for these two components, in one file:
//
//   - receiver: otlp (go.opentelemetry.io/collector/receiver/otlpreceiver),
//     serving profiles on POST /v1development/profiles
//   - exporter: file (github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter),
//     one line of OTLP JSON (ExportProfilesServiceRequest form) per export
//
// Versions: all collector modules at one release, core v0.165.0 (stable
// modules v1.71.0, pdata v1.71.0, whose profiles follow opentelemetry-proto
// v1.10.0's profiles.proto) and contrib v0.165.1. Keep them at one release
// when updating (go get ...@vX for every direct require, then go mod tidy).
//
// Profiles are alpha in the Collector: a pipeline of type profiles is refused
// unless the feature gate `service.profilesSupport` is on. main turns it on,
// so no flag is needed; `--feature-gates=service.profilesSupport` on the
// command line is equivalent and harmless.
//
// The tests run it with the configuration README's Fleet section shows (the
// block under "# clockprof's OTLP profiles into a Collector"), on a free port
// and a file of their own, so what users are shown is what is tested:
//
//	otelcol-clockprof --config collector.yaml
package main

import (
	"log"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/featuregate"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
)

// profilesGate is the Collector's feature gate for profiles pipelines.
const profilesGate = "service.profilesSupport"

func components() (otelcol.Factories, error) {
	var err error
	factories := otelcol.Factories{
		Telemetry: otelconftelemetry.NewFactory(),
	}

	factories.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](
		otlpreceiver.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, err
	}
	factories.ReceiverModules = map[component.Type]string{
		otlpreceiver.NewFactory().Type(): "go.opentelemetry.io/collector/receiver/otlpreceiver v0.165.0",
	}

	factories.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](
		fileexporter.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, err
	}
	factories.ExporterModules = map[component.Type]string{
		fileexporter.NewFactory().Type(): "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter v0.165.1",
	}

	return factories, nil
}

func main() {
	if err := featuregate.GlobalRegistry().Set(profilesGate, true); err != nil {
		log.Fatalf("enabling feature gate %s: %v", profilesGate, err)
	}

	info := component.BuildInfo{
		Command:     "otelcol-clockprof",
		Description: "OpenTelemetry Collector for clockprof's OTLP tests (OTLP receiver, file exporter)",
		Version:     "0.165.0-clockprof",
	}
	set := otelcol.CollectorSettings{
		BuildInfo: info,
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					envprovider.NewFactory(),
					fileprovider.NewFactory(),
				},
			},
		},
		ProviderModules: map[string]string{
			envprovider.NewFactory().Create(confmap.ProviderSettings{}).Scheme():  "go.opentelemetry.io/collector/confmap/provider/envprovider v1.71.0",
			fileprovider.NewFactory().Create(confmap.ProviderSettings{}).Scheme(): "go.opentelemetry.io/collector/confmap/provider/fileprovider v1.71.0",
		},
	}

	if err := otelcol.NewCommand(set).Execute(); err != nil {
		log.Fatalf("collector server run finished with error: %v", err)
	}
}
