"""Never runs: its environment cannot be resolved."""


def build(ctx):
    raise AssertionError("the environment build should have failed before the run")
