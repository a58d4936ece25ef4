"""The IaaS variant of facerec: an HTTP web tier, SQS request/response queues and an auto-scaled app tier.

::

    client --POST / (inputFile)--> web tier --put--> S3 <prefix>-in-bucket
                                      |  \\--send {id, key}--> SQS <prefix>-req-queue --> app tier (N workers)
                                      |                                                  | recognise (core)
                                      |                         S3 <prefix>-out-bucket <-+ <stem> -> name
       <-- "<stem>:<name>" ---- waiter[id] <-- router <-- SQS <prefix>-resp-queue <------+ {id, name}
                                      \\-- auto-scaler: req-queue depth -> number of app instances

Modules: :mod:`.names` (resource names), :mod:`.messages` (the queue messages), :mod:`.web` (the web
tier and its Flask app), :mod:`.router` (the response router), :mod:`.lease` (one web tier per
prefix), :mod:`.web_server` (the waitress server), :mod:`.worker` (the app-tier loop), :mod:`.scaler`
(the scaling policy and the instance-pool interface), :mod:`.pools` (instances as the Auto Scaling
group's EC2 instances or as local worker processes), :mod:`.stack` (the AWS resources, as specs of the
deploy engine), :mod:`.local` (the whole system on this machine, on the embedded moto server of
:mod:`facerec_cli.localcloud`, the tiers with their roles' credentials) and :mod:`.watch` (the live
view of a web tier). The commands are in :mod:`facerec_cli.cli.iaas`.

Like the rest of ``facerec_cli`` this may import ``lambdas`` (the recognition core); nothing under
``lambdas`` imports it.
"""
