# The commands a newcomer needs (see README):
#   make demo   — build and run the daemon on the embedded demo (no hardware)
#   make test   — set up and run every test (what CI runs)
#   make demo-real — the demo with real people: a recorded camera and microphone
#                    (assets/demo-real, configs/demo-real.toml)
#   make deb    — the Debian package for this machine's architecture (target/debian/;
#                 docs/packaging.md)
.PHONY: demo demo-real test setup deb
demo:
	tools/dev.sh demo
demo-real:
	tools/dev.sh demo-real
test:
	tools/dev.sh test
setup:
	tools/dev.sh setup
deb:
	tools/dev.sh deb
