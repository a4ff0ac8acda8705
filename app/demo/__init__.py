"""The demo: a bundled MQTT broker, a simulated PLC, simulated sensors and webcams.

None of this is the product: `vigie demo` starts these beside a normal
runtime so the platform can be tried with nothing but Python packages.
"""
