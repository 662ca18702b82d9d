"""The red-team faults on the Model 336/350 (issue 24), each as a test that failed before its fix."""

from __future__ import annotations

import re

from appliance.naming import ocs_names

# ocs Feed.verify_data_field_string: letters, digits and _ only; a letter first, or underscores then a letter.
OCS_FIELD = re.compile(r"^_*[A-Za-z][A-Za-z0-9_]{0,254}$")


def test_ocs_names_of_digit_led_input_names_are_valid_for_ocs():
    for model in ("336", "350"):
        for ch, name in (("A", "50K Plate"), ("B", "4K Plate"), ("C", "Still"), ("D", "_1K"), ("D2", "")):
            t, v = ocs_names(model, ch, name)
            assert OCS_FIELD.match(t) and OCS_FIELD.match(v), (model, ch, name, t, v)
    assert ocs_names("336", "A", "50K Plate") == ("Input_50K_Plate_T", "Input_50K_Plate_V")
    assert ocs_names("336", "C", "Still Plate") == ("Still_Plate_T", "Still_Plate_V")  # socs' name, kept
