// Builds profiler-ebpf for bpfel-unknown-none with Debian's rustc-web (which ships a
// prebuilt libcore for BPF; see ../shared/TOOLCHAIN.md) and puts the object in OUT_DIR,
// where src/probes/mod.rs embeds it: the one `clockprof` binary is all a host needs.
fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "profiler-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../profiler-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom("/usr"))
}
