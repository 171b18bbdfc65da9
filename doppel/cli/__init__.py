"""The command line's commands (`python -m doppel ...`): `doppel/__main__.py` parses the arguments
and calls one function here, which does the work and returns the exit code. `stack` starts and
stops the local platform and fetches its weights, `keys` makes and revokes API keys, `voice`
trains and speaks cloned voices, `replica` trains, records, quantizes and renders replicas;
`endpoints` finds the Triton the model commands talk to.

The top floor: may import every other doppel room (platform, audio, face, triton, voice, replica,
render, live, domain), importing the heavy ones inside the command that needs them so that a
quick command does not load torch. Nothing imports it but `doppel/__main__.py`.
"""
