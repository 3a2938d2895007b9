"""PacificA as pure state machines: events in, Ready values out. No I/O (DESIGN.md section 2).

Time enters as ticks and randomness as an injected random.Random; the runtimes (replica/, meta/)
and the simulator (tests/sim) drive these cores and execute what they return, in order.
"""
