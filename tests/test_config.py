"""The injector config: validated at load, with errors that name the field; defaults are safe and pinned."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.injection import ConfigError, InjectorConfig, parse_config
from webhook.injection.config import parse_quantity


def test_defaults_pin_every_image_and_give_every_component_requests_and_limits() -> None:
    config = InjectorConfig()
    images = [config.tls_proxy.image, config.log_tail.image, config.wait_for.image, config.git_clone.image]
    images += [preset.image for preset in config.exporters.values()]
    assert all(":" in image and not image.endswith(":latest") for image in images)
    assert set(config.exporters) >= {"elasticsearch", "redis", "postgres", "mysql", "nginx"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"nativeSidecar": True}, "nativeSidecar"),
        ({"tlsProxy": {"image": "nginx; reboot"}}, "tlsProxy.image"),
        ({"tlsProxy": {"runAsUser": 0}}, "tlsProxy.runAsUser"),
        ({"gitClone": {"defaultPath": "relative;x"}}, "gitClone.defaultPath"),
        ({"gitClone": {"defaultPath": "/etc"}}, "gitClone.defaultPath"),
        ({"logTail": {"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}}, "logTail.resources"),
        (
            {
                "logTail": {
                    "resources": {"requests": {"cpu": "2", "memory": "1Mi"}, "limits": {"cpu": "1", "memory": "1Mi"}}
                }
            },
            "exceeds limits.cpu",
        ),
        ({"gitClone": {"allowedSchemes": ["file"]}}, "gitClone.allowedSchemes"),
        ({"tlsProxy": {"loadModules": ["modules/ngx_stream_module.so"]}}, "tlsProxy.loadModules"),
        ({"tlsProxy": {"loadModules": ["/usr/lib/nginx/../../etc/passwd.so"]}}, "tlsProxy.loadModules"),
        ({"tlsProxy": {"loadModules": ["/m.so; include /etc/passwd"]}}, "tlsProxy.loadModules"),
        ({"tlsProxy": {"loadModules": ["/usr/lib/nginx/modules/ngx_stream_module"]}}, "not a plain absolute path"),
        ({"tlsProxy": {"loadModules": "/usr/lib/nginx/modules/ngx_stream_module.so"}}, "tlsProxy.loadModules"),
        ({"exporters": {"x": {"image": "a:1", "port": 70000, "targetPort": 1}}}, "exporters.x.port"),
        (
            {
                "sidecarTemplates": {
                    "x": {"containers": [{"name": "a", "image": "b:1", "securityContext": {"privileged": True}}]}
                }
            },
            "privileged",
        ),
        (
            {
                "sidecarTemplates": {
                    "x": {"containers": [{"name": "a", "image": "b:1", "securityContext": {"runAsUser": 0}}]}
                }
            },
            "non-root",
        ),
        (
            {
                "sidecarTemplates": {
                    "x": {
                        "containers": [
                            {"name": "a", "image": "b:1", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}
                        ]
                    }
                }
            },
            "NET_BIND_SERVICE",
        ),
        (
            {
                "sidecarTemplates": {
                    "x": {
                        "containers": [{"name": "a", "image": "b:1"}],
                        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                    }
                }
            },
            "hostPath",
        ),
        (
            {
                "sidecarTemplates": {
                    "x": {"containers": [{"name": "a", "image": "b:1", "ports": [{"containerPort": 1, "hostPort": 1}]}]}
                }
            },
            "hostPort",
        ),
        (
            {
                "sidecarTemplates": {
                    "x": {
                        "containers": [
                            {"name": "a", "image": "b:1", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}
                        ]
                    }
                }
            },
            "not among the template's volumes",
        ),
        (
            {"initTemplates": {"x": {"containers": [{"name": "a", "image": "b:1", "readinessProbe": {}}]}}},
            "run-to-completion",
        ),
        ({"initTemplates": {"Bad_Name": {"containers": [{"name": "a", "image": "b:1"}]}}}, "Bad_Name"),
        ("just a string", "mapping"),
    ],
)
def test_invalid_config_is_refused_naming_the_field(data: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert field in str(info.value)


def test_config_exporters_merge_over_the_builtin_presets() -> None:
    config = parse_config(
        {"exporters": {"redis": {"image": "registry.example.com/redis-exp:2", "port": 9121, "targetPort": 6379}}}
    )
    assert config.exporters["redis"].image == "registry.example.com/redis-exp:2"
    assert "elasticsearch" in config.exporters


@pytest.mark.parametrize(
    ("text", "value"), [("64Mi", 64 * 2**20), ("100m", 0.1), ("1.5Gi", 1.5 * 2**30), ("2e3", 2000), ("1k", 1000)]
)
def test_quantities_parse_as_kubernetes_does(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == pytest.approx(value)


@pytest.mark.parametrize("text", ["1mi", "64MB", "abc", "", "1e9999999", "--1"])
def test_non_quantities_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_load_modules_open_every_proxy_config_and_listen_ipv6_still_loads() -> None:
    from webhook.injection.nginx_conf import ProxySpec, render

    stream = "/usr/lib/nginx/modules/ngx_stream_module.so"
    # listenIPv6 is deprecated and has no effect (the start script decides), but older configs keep loading.
    config = parse_config({"tlsProxy": {"loadModules": [stream], "listenIPv6": True}})
    assert config.tls_proxy.load_modules == (stream,)
    for protocol in ("http", "tcp"):
        lines = render(ProxySpec(8443, 8080, protocol, False, load_modules=config.tls_proxy.load_modules)).splitlines()
        assert lines[0].startswith("# generated by podpatterns") and lines[1] == f"load_module {stream};"
    assert "load_module" not in render(ProxySpec(8443, 8080, "tcp", False))
