"""The chart's history: the last N samples of a few series, in int16 arrays allocated once. No
growth while it fills and no float objects: 2 bytes a value instead of a list slot plus a
boxed float (about 6 kB for the full half hour of three series on the Unix port)."""

from array import array

MISSING = -32768  # a sample with no value (no grid reading, charger not connected)


class Trend:
    def __init__(self, series, points):
        """`series`: ((name, scale), ...); a value is kept as round(value * scale)."""
        self.series = series
        self.points = points
        self.columns = [array("h", range(points)) for _ in series]
        self.start = 0
        self.count = 0

    def add(self, values):
        i = (self.start + self.count) % self.points
        if self.count == self.points:
            self.start = (self.start + 1) % self.points
        else:
            self.count += 1
        for column, spec, value in zip(self.columns, self.series, values):
            if value is None:
                column[i] = MISSING
            else:
                column[i] = max(-32767, min(32767, round(value * spec[1])))

    def lists(self):
        """{name: [value or None, ...]}, oldest first."""
        out = {}
        for column, (name, scale) in zip(self.columns, self.series):
            values = []
            for k in range(self.count):
                raw = column[(self.start + k) % self.points]
                values.append(None if raw == MISSING else raw if scale == 1 else raw / scale)
            out[name] = values
        return out
