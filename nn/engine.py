"""Which implementation runs a model: the readable reference layers or the fast CPU engine."""
from nn.model import Sequential
ENGINES = ("fast", "reference")
def build(spec, rng, engine="fast"):
    if engine not in ENGINES: raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return Sequential.from_spec(spec, rng)
