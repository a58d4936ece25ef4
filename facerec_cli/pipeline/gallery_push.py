"""``facerec gallery push``: the gallery alone to the object bootstrap puts it in
(``s3://<prefix>-details/.facerec/gallery.safetensors``; a deployment made before the details bucket
reads it from ``s3://<prefix>-output/...``, and gets it there), without a deploy.

The face-recognition function checks that object's ETag at every invocation and reloads it when it
changed (``lambdas/warm.py``), so the next invocation uses the new gallery; one already running ends
with the old. The object is written as bootstrap writes it (``infra/resources/s3.plan_object``: the
bucket's default SSE-S3, ContentMD5, the md5 in its metadata, ExpectedBucketOwner), so a later
``bootstrap --gallery`` with the same file finds nothing to change.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from lambdas import env as fenv
from lambdas.core.gallery import Gallery
from lambdas.core.weights import WEIGHTS_CHOICES, is_file_id

from facerec_cli.config import Settings
from facerec_cli.errors import UserError
from facerec_cli.infra.clients import Clients
from facerec_cli.infra.errors import aws_errors, not_deployed
from facerec_cli.infra.readers import get_or_none


@dataclass(frozen=True)
class Target:
    """Where the deployed functions read their gallery, and with which weights they embed faces."""

    uri: str
    bucket: str
    key: str
    function: str
    weights: str | None  # the function's FACEREC_WEIGHTS; None: unset (the gallery's own)


@dataclass(frozen=True)
class Pushed:
    target: Target
    md5: str
    size: int
    changed: bool  # False: the object held these very bytes already


def deployed_target(settings: Settings, clients: Clients) -> Target:
    """The gallery object and the recognition function's settings of the deployment ``settings`` name;
    a UserError when nothing is deployed there."""
    from facerec_cli.pipeline.deployer import deployed_environment

    n = settings.names
    with aws_errors(settings, "reading the face-recognition function"):
        env = deployed_environment(clients, n.recognition_function)
    if not env:
        raise not_deployed(settings, f"function {n.recognition_function}")
    places = {f"s3://{bucket}/{n.gallery_key}": bucket for bucket in (n.details_bucket, n.output_bucket)}
    uri = next(iter(places))
    reads = env.get(fenv.GALLERY_URI) or None
    if reads not in places:
        # Function names carry no prefix: this is another deployment's function (bootstrap always points
        # it at its own details bucket, or before there was one its output bucket), and a gallery put at
        # ``uri`` would reach no function.
        raise UserError(
            f"{n.recognition_function} in {settings.region} reads its gallery from {reads}, not {uri}: it belongs to another deployment",
            hint="pass the --prefix (and --region) it was deployed with, or run `facerec bootstrap` for this prefix",
        )
    return Target(reads, places[reads], n.gallery_key, n.recognition_function, env.get(fenv.WEIGHTS) or None)


def check_for_functions(gallery: Gallery, target: Target) -> None:
    """Refuse a gallery the deployed function would refuse: empty, or made with other weights than the
    ones it embeds faces with. A FACEREC_WEIGHTS that is a path inside the image cannot be hashed here,
    so it is not compared (the function still refuses a mismatch when it loads the gallery)."""
    if not gallery.names:
        raise UserError("the gallery has nobody enrolled: the functions would fail on every video", hint="add people first")
    deployed = target.weights
    if deployed is not None and (deployed in WEIGHTS_CHOICES or is_file_id(deployed)) and deployed != gallery.weights:
        raise UserError(
            f"the gallery was made with {gallery.weights} weights, but {target.function} embeds faces with {deployed}: "
            "it would refuse this gallery",
            hint=f"enrol with `--weights {deployed}`, or redeploy with `facerec bootstrap --gallery GALLERY` to change the functions' weights",
        )


def push_gallery(settings: Settings, body: bytes, *, origin: str = "gallery", clients: Clients | None = None,
                 target: Target | None = None) -> Pushed:  # fmt: skip
    """Upload the gallery file's ``body`` to the deployment's gallery object, after checking that it
    loads and suits the deployed function. Unchanged bytes are not sent again."""
    gallery = Gallery.from_bytes(body, origin=origin)  # a torch file or a damaged one: GalleryError, nothing sent
    clients = clients or Clients.from_settings(settings)
    target = target or deployed_target(settings, clients)
    check_for_functions(gallery, target)
    md5 = hashlib.md5(body).hexdigest()
    with aws_errors(settings, f"uploading the gallery to {target.uri}", bucket=target.bucket):
        clients.expect_owner(settings.names.buckets)
        s3 = clients.s3
        current = get_or_none(s3.head_object, Bucket=target.bucket, Key=target.key)
        if current is not None and (current.get("Metadata") or {}).get("md5") == md5:
            return Pushed(target, md5, len(body), changed=False)
        s3.put_object(Bucket=target.bucket, Key=target.key, Body=body, ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
                      Metadata={"md5": md5})  # fmt: skip
    return Pushed(target, md5, len(body), changed=True)
