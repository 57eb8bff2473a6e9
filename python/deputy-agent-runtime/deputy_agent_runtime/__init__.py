"""Deputy's Python agent runtime: hosts one MLflow agent (ChatAgent, ResponsesAgent or pyfunc) as a worker process
of the Deputy server, speaking JSON lines on stdin/stdout. See README.md."""

__version__ = "0.1.0"
