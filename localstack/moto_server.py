"""moto's server, with the tagging calls of Application Auto Scaling that moto lacks.

    localstack/.tools/moto/bin/python localstack/moto_server.py -H 127.0.0.1 -p PORT

moto (5.2.5) implements RegisterScalableTarget but not TagResource, UntagResource and
ListTagsForResource for Application Auto Scaling; its server answers those with HTTP 500, which the
Terraform AWS provider retries for minutes (it reads the tags of every ``aws_appautoscaling_target``).
This adds the three calls on top of moto's own, keeping the tags in memory per target ARN (tags given
to RegisterScalableTarget included), then runs moto's server unchanged. Used by
tests/cloud/test_terraform_apply.py; runs in moto's venv (localstack/install-tools.sh moto).
"""

from __future__ import annotations

import json
from typing import Any

from moto.applicationautoscaling.responses import ApplicationAutoScalingResponse
from moto.server import main

TAGS: dict[str, dict[str, str]] = {}

_register = ApplicationAutoScalingResponse.register_scalable_target


def register_scalable_target(self: Any) -> str:
    answer: str = _register(self)
    arn = json.loads(answer)["ScalableTargetARN"]
    TAGS.setdefault(arn, {}).update(self._get_param("Tags") or {})
    return answer


def tag_resource(self: Any) -> str:
    TAGS.setdefault(self._get_param("ResourceARN"), {}).update(self._get_param("Tags") or {})
    return "{}"


def untag_resource(self: Any) -> str:
    tags = TAGS.setdefault(self._get_param("ResourceARN"), {})
    for key in self._get_param("TagKeys") or []:
        tags.pop(key, None)
    return "{}"


def list_tags_for_resource(self: Any) -> str:
    return json.dumps({"Tags": TAGS.get(self._get_param("ResourceARN"), {})})


ApplicationAutoScalingResponse.register_scalable_target = register_scalable_target  # type: ignore[method-assign]
ApplicationAutoScalingResponse.tag_resource = tag_resource  # type: ignore[attr-defined]
ApplicationAutoScalingResponse.untag_resource = untag_resource  # type: ignore[attr-defined]
ApplicationAutoScalingResponse.list_tags_for_resource = list_tags_for_resource  # type: ignore[attr-defined]

if __name__ == "__main__":
    main()
