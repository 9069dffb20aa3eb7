# effvit_plugins: `make demo` (main job on generated demo data), `make test` (the suite). Both set up first.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test benchmark clean-demo

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	@$(PY) -m pytest tests $(PYTEST_ARGS)

benchmark: setup
	@$(PY) tools/benchmark.py

clean-demo:
	rm -rf data/cityscapes_demo work_dirs/demo
