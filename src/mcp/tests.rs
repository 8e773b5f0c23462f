//! Unit tests of the tool router over an in-process backend.
