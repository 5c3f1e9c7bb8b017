# Shortcuts for the scripts under scripts/ (run as root).
.PHONY: run test
run:
	scripts/run
test:
	scripts/test
