#![no_std]
// The programs live in main.rs (built for bpfel-unknown-none by profiler/build.rs).
// This empty library lets `profiler` name the crate as a build-dependency, so
// cargo rebuilds the embedded object when it changes.
