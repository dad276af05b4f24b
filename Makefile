# Shortcuts for the scripts that do the work (run as root on Debian: they install what they need).
.PHONY: demo test charm bench

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

charm:
	bash scripts/build-charm.sh

# Every benchmark; each prints its numbers against the targets and anchors of its issue.
bench:
	bash scripts/bench.sh
