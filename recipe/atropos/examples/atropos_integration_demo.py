"""The demo under the name the simplified-integration request gives it: `python -m
recipe.atropos.examples.atropos_integration_demo [--steps N] [--workdir DIR]` is the CPU demo
(examples/demo_cpu.py, what `scripts/demo.sh` runs)."""

from recipe.atropos.examples.demo_cpu import main

if __name__ == "__main__":
    main()
