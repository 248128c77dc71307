"""ponder: a test-time-compute gateway and lab.

The flow every entry point shares (CLI, gateway, lab):

    request -> policy (lane, budget, strategy) -> strategy -> backend
            -> result (answer, thinking, usage, cost) -> response / ledger
"""

__version__ = "0.1.0"
