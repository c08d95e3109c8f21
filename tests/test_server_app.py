"""The App and the composition root, without a socket: what ``serve.build_app`` wires, and
that what one App is given (its error styles) stays with it."""

from __future__ import annotations

import json

from clinvk_lib import config
from clinvk_lib.server import errors, serve
from clinvk_lib.server.app import App
from clinvk_lib.server.openapi import ANTHROPIC, NATIVE, OPENAI


def load(tmp_path):
    return config.load(None, env={"CLINVK_HOME": str(tmp_path)})


def test_an_error_style_registered_on_one_app_leaves_other_apps_alone(tmp_path):
    cfg = load(tmp_path)
    first, second = App(cfg), App(cfg)
    first.error_styles.register("Other", lambda err: {"failure": err.message}, "/other/")
    err = errors.not_found("GET", "/other/x")
    assert first.error_styles.for_path("/other/x") == "Other"
    assert json.loads(first.error_styles.render(err, "Other")) == {"failure": err.message}
    assert second.error_styles.for_path("/other/x") == NATIVE
    assert json.loads(second.error_styles.render(err, "Other")) == {
        "error": "not_found", "message": err.message}


def test_built_app_renders_errors_in_the_style_of_each_api_prefix(tmp_path):
    styles = serve.build_app(load(tmp_path)).error_styles
    assert styles.for_path("/openai/v1/nothing") == OPENAI
    assert styles.for_path("/anthropic/v1/nothing") == ANTHROPIC
    assert styles.for_path("/api/v1/nothing") == NATIVE
    body = json.loads(styles.render(errors.ApiError(400, "invalid_request", "bad"), OPENAI))
    assert body["error"]["message"] == "bad"


def test_longest_registered_prefix_decides_the_style(tmp_path):
    styles = App(load(tmp_path)).error_styles
    styles.register("Outer", lambda err: {}, "/outer/")
    styles.register("Inner", lambda err: {}, "/outer/inner/")
    assert styles.for_path("/outer/inner/x") == "Inner"
    assert styles.for_path("/outer/x") == "Outer"
