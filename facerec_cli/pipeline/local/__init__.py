"""`facerec run-local`: the pipeline on the embedded local cloud. :mod:`.runner` is ``LocalPipeline``, which
deploys the pipeline on :class:`facerec_cli.localcloud.server.LocalCloud` (whose Lambda runtime is
:mod:`facerec_cli.localcloud.runtime`); :mod:`.containers` runs the pipeline's images behind the Lambda
runtime interface emulator."""
