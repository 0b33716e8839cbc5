"""A relay on MQTT in the virtual charger's mains lead, as Tasmota does it: a command topic
that takes ON/OFF (an empty payload asks for the state) and a retained state topic."""

from __future__ import annotations

from typing import Callable

import paho.mqtt.client as paho


class MqttRelay:
    def __init__(
        self,
        host: str,
        port: int,
        switch: Callable[[bool], None],
        is_on: Callable[[], bool],
        command_topic: str = "cmnd/charger-plug/POWER",
        state_topic: str = "stat/charger-plug/POWER",
    ) -> None:
        self.switch = switch
        self.is_on = is_on
        self.command_topic = command_topic
        self.state_topic = state_topic
        self.commands = 0
        self.mute = False  # a relay that switches but never reports: the firmware must notice
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port)

    def _on_connect(self, client: paho.Client, *args: object) -> None:
        client.subscribe(self.command_topic)
        self._report()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        self.commands += 1
        word = msg.payload.decode(errors="replace").strip().upper()
        if word in ("ON", "OFF"):
            self.switch(word == "ON")
        elif word == "TOGGLE":
            self.switch(not self.is_on())
        self._report()

    def _report(self) -> None:
        if not self.mute:
            self.client.publish(self.state_topic, "ON" if self.is_on() else "OFF", retain=True)

    def start(self) -> "MqttRelay":
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
