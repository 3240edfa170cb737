"""`s5 benchmark`: speed and peak memory of S5 against ViS4mer (S4) and a video transformer.

Layout: `measure` (memory probes, timing statistics, slopes), `workload` (model + input + one step),
`worker` (the per-model process), `worker_process` (how one starts), `runner` (the parent: round-robin,
budgets, memory runs, sweep), `kernel` (the S4 kernel + FFT convolution stage), `report` (ratios, targets, Rich table, JSON), `plot`.
"""
