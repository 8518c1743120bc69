# The two commands a newcomer needs (see README):
#   make demo   — build and run the daemon on the embedded demo (no hardware)
#   make test   — set up and run every test (what CI runs)
.PHONY: demo test setup
demo:
	tools/dev.sh demo
test:
	tools/dev.sh test
setup:
	tools/dev.sh setup
