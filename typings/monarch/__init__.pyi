# The torchmonarch (0.7) surface this project uses. Monarch ships inline types but no
# py.typed marker; these stubs state the part runtime_monarch relies on, so mypy checks it
# against a fixed surface. Never add monarch.gradient (it refuses our torch build).
