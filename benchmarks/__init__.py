"""raybird benchmarks: throughput, Ray overhead, memory and accuracy of the speed settings,
printed as Markdown tables with ratios measured in the same run. ``python -m benchmarks``
runs them all (``./dev.sh bench``); each module also runs alone (``python -m benchmarks.segment``)."""
