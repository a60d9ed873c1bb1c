# Ray's private modules that tests and benchmarks read (the dashboard-backed public state API
# is not available in the test clusters). Deliberately untyped (Any): callers cast.
from ray._private import internal_api as internal_api
from ray._private import state as state
