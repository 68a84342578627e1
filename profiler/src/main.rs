//! The `clockprof` binary. Everything is in the library (lib.rs), which the
//! man page and completion generator (examples/generate_docs.rs) reads the
//! command line from.

fn main() {
    clockprof::main()
}
