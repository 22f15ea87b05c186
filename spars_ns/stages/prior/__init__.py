"""Dense prior: one `DensePrior` per training view from a backend (`registry.py`; a backend is one module,
`backend.py`)."""
