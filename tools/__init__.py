"""Host tools: the VE.Direct CLI, the simulators, benchmarks, flashing."""
