"""Job bodies: where records and the engine meet for batch work.

Each job claims its row (doppel.domain), runs the engine on it (doppel.replica, doppel.render,
doppel.audio through Triton) and records the outcome (doppel.domain again): claim -> engine ->
finish. `orchestrator.worker` registers them with arq and retries them while a model service is
down. A job takes ids and clients, never request data, so a re-run after a dead worker starts
clean.

May import: everything in `doppel` (the engine and the records alike). Nothing in `doppel`
imports this package.
"""
