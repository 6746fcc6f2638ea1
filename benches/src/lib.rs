//! `cxr-benches`: criterion benchmarks (`benches/`) and the scripts that compare
//! them with Python references in the same run (`compare.sh`). Speed and memory
//! targets live here, never in timed tests.
