"""The heap benchmark's parts; tools/bench_heap.py is its command line. firmware: the build the
Unix port runs; browser, frametap: what a run observes; run: one run; verdict: flat, passed;
find_min: the smallest heap; breakdown: what each import costs; report: the tables."""
