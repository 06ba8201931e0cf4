"""Reports: latency benchmarks and the student-vs-teacher comparison (table, plots)."""
