"""Prometheus text exposition of the numbers a user graphs (GET /metrics); read in per scrape."""


def text(status):
    c = status["charger"]
    g = status["grid"]
    k = status["counters"]
    rows = [
        ("ip22_up", 1 if c["connected"] else 0),
        ("ip22_battery_voltage_volts", c["voltage_v"]),
        ("ip22_battery_current_amperes", c["current_a"]),
        ("ip22_limit_amperes", c["limit_a"]),
        ("ip22_state", c["state_code"]),
        ("ip22_error", c["error_code"]),
        ("ip22_stored_writes_total", c["stored_writes"]),
        ("ip22_grid_power_watts", g.get("power_w")),
        ("ip22_grid_age_seconds", g.get("age_s")),
        ("ip22_control_setpoint_amperes", status["control"]["setpoint_a"]),
        ("ip22_frames_ok_total", k["frames_ok"]),
        ("ip22_frames_bad_total", k["frames_bad"]),
        ("ip22_commands_total", k["commands"]),
        ("ip22_command_failures_total", k["failures"]),
        ("ip22_uptime_seconds", status["uptime_s"]),
        ("ip22_free_heap_bytes", status["free_heap"]),
    ]
    w = status.get("web")
    if w:
        rows += [
            ("ip22_http_auth_failures_total", w["auth_failures"]),
            ("ip22_http_auth_delayed_total", w["auth_delayed"]),
            ("ip22_http_auth_busy_total", w["auth_busy"]),
            ("ip22_http_connections_dropped_total", w["dropped"]),
            ("ip22_http_refused_total", sum(w["refused"].values())),
            ("ip22_http_connections_open", w["open"]),
        ]
    lines = []
    for name, value in rows:
        if value is None:
            continue
        kind = "counter" if name.endswith("_total") else "gauge"
        lines.append("# TYPE %s %s" % (name, kind))
        lines.append("%s %s" % (name, float(value) if isinstance(value, float) else int(value)))
    return "\n".join(lines) + "\n"
