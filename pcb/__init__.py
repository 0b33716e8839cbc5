"""The IP22 adapter board as checked code.

`adapter.build()` describes the circuit in SKiDL with every part defined in code (no KiCad
libraries needed), `checks` holds the rules the test suite enforces (ERC, isolation barrier,
decoupling, UART pins against the firmware's defaults, footprint/value on every part), and
`python -m pcb.build` (or `./dev pcb`) writes the netlist, BOM and block diagram to pcb/out/.
"""
