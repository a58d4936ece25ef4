"""The facerec command line: config, AWS clients, deploy, the local runtime and result rendering."""

__version__ = "0.1.0"
