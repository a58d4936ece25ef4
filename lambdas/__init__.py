"""What runs inside AWS Lambda and in the local runtime: the two handlers and the recognition core.

Nothing here imports ``facerec_cli``; dependencies point one way (cli -> lambdas).
"""
