# effvit_plugins: `make demo` (main job on generated demo data), `make test` (the suite). Both set up first.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test benchmark clean-demo demo-det clean-demo-det

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

# detection demo: Mask R-CNN on the generated COCO-layout set (scripts/demo_det.sh), a few minutes on a CPU
demo-det: setup
	@bash scripts/demo_det.sh

clean-demo-det:
	rm -rf data/coco_demo work_dirs/demo_det
