"""The IP22's registers: how to read and write each (notes sections 1.5 and 3). About 12 kB of
heap as a table, so the firmware reads it in only for a register it has not used before
(ip22.spec) and keeps just those entries."""

from ip22 import NVM, RAW, READ_ONLY, TEXT, VOLATILE, WRITABLE

# id: (name, type, scale, unit, storage, sentinel)
#   scale: physical = raw * scale; sentinel: the type's "not available" value means None
REGISTERS = {
    0x0100: ("product_id", RAW, 1, "", READ_ONLY, False),
    0x0102: ("app_version", RAW, 1, "", READ_ONLY, False),
    0x010A: ("serial_number", TEXT, 1, "", READ_ONLY, False),
    0x010B: ("model_name", TEXT, 1, "", READ_ONLY, False),
    0x010C: ("description", TEXT, 1, "", READ_ONLY, False),
    0x0120: ("uptime", "un32", 1, "s", READ_ONLY, True),
    0x0140: ("capabilities1", "un32", 1, "", READ_ONLY, False),
    0x0143: ("capabilities4", "un32", 1, "", READ_ONLY, False),
    0x0200: ("device_mode", "un8", 1, "", WRITABLE, True),
    0x0201: ("device_state", "un8", 1, "", READ_ONLY, True),
    0x0206: ("device_function", "un8", 1, "", NVM, True),
    0x0207: ("off_reason", "un32", 1, "", READ_ONLY, False),
    0x1042: ("history_service", RAW, 1, "", READ_ONLY, False),
    0x1043: ("history_user", RAW, 1, "", READ_ONLY, False),
    0x1070: ("history_cycle", RAW, 1, "", READ_ONLY, False),
    0x2001: ("link_voltage_set", "un16", 0.01, "V", VOLATILE, True),
    0x2002: ("link_voltage_sense", "un16", 0.01, "V", VOLATILE, True),
    0x2003: ("link_temperature_sense", "sn16", 0.01, "C", VOLATILE, True),
    0x2007: ("link_elapsed_time", "un32", 0.001, "s", VOLATILE, True),
    0x2008: ("link_absorption_time", "un16", 0.01, "h", VOLATILE, True),
    0x2009: ("link_error_code", "un8", 1, "", VOLATILE, True),
    0x200A: ("link_battery_current", "sn32", 0.001, "A", VOLATILE, True),
    0x200C: ("link_device_state", "un8", 1, "", VOLATILE, True),
    0x200D: ("link_network_info", "un16", 1, "", READ_ONLY, False),
    0x200E: ("link_network_mode", "un8", 1, "", VOLATILE, False),
    0x200F: ("link_network_status", "un8", 1, "", READ_ONLY, False),
    0x2013: ("link_total_charge_current", "sn32", 0.001, "A", VOLATILE, True),
    0x2015: ("link_charge_current_limit", "un16", 0.1, "A", VOLATILE, True),
    0x2042: ("link_absorption_end_time", "un16", 0.01, "h", VOLATILE, True),
    0xE001: ("low_current_mode", "un8", 1, "", NVM, True),
    0xEC15: ("ble_broadcast_registers", "un8", 1, "", READ_ONLY, False),
    0xED8C: ("battery_current_ma", "sn32", 0.001, "A", READ_ONLY, True),
    0xED8D: ("battery_voltage", "sn16", 0.01, "V", READ_ONLY, True),
    0xED8F: ("battery_current", "sn16", 0.1, "A", READ_ONLY, True),
    0xEDC8: ("min_current", "un16", 0.1, "A", READ_ONLY, True),
    0xEDD4: ("charger_custom_state", "un8", 1, "", READ_ONLY, False),
    0xEDD5: ("charger_voltage", "un16", 0.01, "V", READ_ONLY, True),
    0xEDD7: ("charger_current", "sn16", 0.1, "A", READ_ONLY, True),
    0xEDDA: ("charger_error", "un8", 1, "", READ_ONLY, True),
    0xEDDB: ("charger_temperature", "sn16", 0.01, "C", READ_ONLY, True),
    0xEDDE: ("charger_outputs", "un8", 1, "", READ_ONLY, True),
    0xEDDF: ("max_current", "un16", 0.1, "A", READ_ONLY, True),
    0xEDEC: ("battery_temperature", "un16", 0.01, "K", READ_ONLY, True),
    0xEDF0: ("charge_current_limit", "un16", 0.1, "A", NVM, True),
    0xEDF1: ("battery_type", "un8", 1, "", NVM, False),  # 0xFF = user defined, not n/a
    0xEDF6: ("float_voltage", "un16", 0.01, "V", NVM, True),
    0xEDF7: ("absorption_voltage", "un16", 0.01, "V", NVM, True),
    0xEE16: ("voltage_sense_used", "un16", 0.01, "V", READ_ONLY, True),
}

BY_NAME = {spec[0]: reg for reg, spec in REGISTERS.items()}
