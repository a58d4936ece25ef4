"""The IaaS variant of facerec: an HTTP web tier, SQS request/response queues and an auto-scaled app tier.

::

    client --POST / (inputFile)--> web tier --put--> S3 <prefix>-in-bucket
                                      |  \\--send {id, key}--> SQS <prefix>-req-queue --> app tier (N workers)
                                      |                                                  | recognise (core)
                                      |                         S3 <prefix>-out-bucket <-+ <stem> -> name
       <-- "<stem>:<name>" ---- waiter[id] <-- router <-- SQS <prefix>-resp-queue <------+ {id, name}
                                      \\-- auto-scaler: req-queue depth -> number of app instances

Modules: :mod:`.names` (resource names), :mod:`.messages` (the queue messages), :mod:`.web` (Flask app,
response router, waitress server), :mod:`.worker` (the app-tier loop), :mod:`.scaler` (the scaling
policy and the instance-pool interface), :mod:`.pools` (instances as the Auto Scaling group's EC2
instances or as local worker processes), :mod:`.bootstrap` (plan/apply of the AWS resources, on the
PaaS planner's machinery), :mod:`.local` (the whole system on this machine, on the embedded moto
server, the tiers with their roles' credentials), :mod:`.moto_iam` (IAM enforcement on that server)
and :mod:`.cli`.

Like the rest of ``facerec_cli`` this may import ``lambdas`` (the recognition core); nothing under
``lambdas`` imports it.
"""
