"""A smart plug in the virtual charger's mains lead, speaking the Shelly Gen2 HTTP RPC API
(`/rpc/Switch.Set`, `/rpc/Switch.GetStatus`) and Tasmota's (`/cm?cmnd=Power ...`)."""

from __future__ import annotations

from typing import Any, Callable

from microdot import Microdot, Request

from tools.sim.charger import VirtualIP22


def plug_app(charger: VirtualIP22, now: Callable[[], float]) -> Microdot:
    app = Microdot()
    app.requests = 0  # type: ignore[attr-defined]

    def state() -> dict[str, Any]:
        return {"id": 0, "output": charger.mains, "apower": round(charger.ac_w, 1)}

    @app.get("/rpc/Switch.Set")
    async def switch_set(request: Request) -> Any:
        app.requests += 1  # type: ignore[attr-defined]
        if request.args.get("id") != "0" or request.args.get("on") not in ("true", "false"):
            return {"code": -103, "message": "Invalid argument"}, 400
        was_on = charger.mains
        charger.set_mains(request.args["on"] == "true", now())
        return {"was_on": was_on}

    @app.get("/rpc/Switch.GetStatus")
    async def switch_status(request: Request) -> Any:
        app.requests += 1  # type: ignore[attr-defined]
        if request.args.get("id") != "0":
            return {"code": -105, "message": "Argument 'id', value 1 not found!"}, 404
        return state()

    @app.get("/cm")
    async def tasmota(request: Request) -> Any:
        app.requests += 1  # type: ignore[attr-defined]
        command = request.args.get("cmnd", "").lower()
        if command in ("power on", "power off"):
            charger.set_mains(command == "power on", now())
        elif command != "power":
            return {"Command": "Unknown"}
        return {"POWER": "ON" if charger.mains else "OFF"}

    return app
