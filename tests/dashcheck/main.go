// dashcheck validates a Grafana dashboard JSON against Grafana's own
// dashboard schema, as the Grafana Foundation SDK generates it from the
// schema (CUE kinds): a strict decode (unknown or mistyped fields, absent
// required ones, panel options and Prometheus queries by their registered
// kinds) then the schema's constraints (Validate). It also refuses a panel
// whose type has no registered kind, or a query without an expression.
//
//	go run . DASHBOARD.json
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dashcheck DASHBOARD.json")
		os.Exit(2)
	}
	runtime := cog.NewRuntime()
	runtime.RegisterPanelcfgVariant(timeseries.VariantConfig())
	runtime.RegisterPanelcfgVariant(table.VariantConfig())
	runtime.RegisterPanelcfgVariant(stat.VariantConfig())
	runtime.RegisterDataqueryVariant(prometheus.VariantConfig())

	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var board dashboard.Dashboard
	if err := failed(board.UnmarshalJSONStrict(raw)); err != nil {
		fmt.Fprintf(os.Stderr, "%s does not decode strictly as a dashboard: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if err := failed(board.Validate()); err != nil {
		fmt.Fprintf(os.Stderr, "%s breaks the dashboard schema: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	// PanelOrRowPanel's strict decode checks each panel but then drops it
	// when the SDK's empty error list comes back (see failed): the board's
	// Panels are empty here, so the panels are read again for what the
	// schema cannot say.
	var raws struct {
		Panels []struct {
			Type    string            `json:"type"`
			Title   string            `json:"title"`
			Targets []json.RawMessage `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &raws); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	panels := 0
	for _, panel := range raws.Panels {
		panels++
		if _, found := cog.ConfigForPanelcfgVariant(panel.Type); !found {
			fmt.Fprintf(os.Stderr, "panel %q has type %q, which dashcheck does not know\n", panel.Title, panel.Type)
			os.Exit(1)
		}
		if len(panel.Targets) == 0 {
			fmt.Fprintf(os.Stderr, "panel %q has no query\n", panel.Title)
			os.Exit(1)
		}
		// The same SDK habit drops each query it decoded: each is decoded
		// again here, strictly, as a Prometheus query.
		for _, target := range panel.Targets {
			var query prometheus.Dataquery
			if err := failed(query.UnmarshalJSONStrict(target)); err != nil {
				fmt.Fprintf(os.Stderr, "panel %q: %v\n", panel.Title, err)
				os.Exit(1)
			}
			if query.Expr == "" {
				fmt.Fprintf(os.Stderr, "panel %q has a query without an expression\n", panel.Title)
				os.Exit(1)
			}
		}
	}
	if panels == 0 {
		fmt.Fprintf(os.Stderr, "%s has no panels\n", os.Args[1])
		os.Exit(1)
	}
	fmt.Printf("%s: valid, %d panels\n", os.Args[1], panels)
}

// failed is err, unless it is the SDK's empty list of errors: its
// functions return their cog.BuildErrors even when it holds none, a
// non-nil error interface around a nil slice.
func failed(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}
