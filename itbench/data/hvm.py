"""The HvM object set: 64 objects in 8 categories (Majaj, Hong et al. 2015).

Used to name the category of an object where a file gives only object names
(the course file ``IT_data.h5``). Category labels are spelled as in
Brain-Score's ``hvm`` stimulus sets. Object names are matched ignoring case.
"""

from __future__ import annotations

HVM_OBJECTS: dict[str, tuple[str, ...]] = {
    "Animals": ("bear", "blCow", "breed_pug", "ELEPHANT_M", "GORILLA", "hedgehog", "LIONESS", "TURTLE_L"),
    "Boats": ("BAHRAIN", "CGTG_L", "DTUG_L", "MQUEEN_L", "SISTER_L", "cruiser", "motoryacht", "support"),
    "Cars": ("Beetle", "alfa155", "astra", "bmw325", "bora_a", "celica", "clio", "z3"),
    "Chairs": ("_001", "_004", "_008", "_010", "_011", "_014", "_031", "_033"),
    "Faces": tuple(f"face000{i}" for i in range(1, 9)),
    "Fruits": (
        "Apple_Fruit_obj",
        "Apricot_obj",
        "Peach_obj",
        "Pear_obj",
        "Strawberry_obj",
        "raspberry_obj",
        "walnut_obj",
        "watermelon_obj",
    ),
    "Planes": (
        "_01_Airliner_2jetEngines",
        "_05_future",
        "_19_flyingBoat",
        "f16",
        "junkers88",
        "mig29",
        "rdbarren",
        "sopwith",
    ),
    "Tables": ("_08", "_10", "_11", "_12", "_18", "_37", "_38", "_44"),
}
UNKNOWN = "unknown"

_BY_OBJECT = {obj.lower(): category for category, objects in HVM_OBJECTS.items() for obj in objects}


def hvm_category(object_name: str) -> str:
    """The HvM category of an object name, or ``"unknown"`` when it is not an HvM object."""
    return _BY_OBJECT.get(str(object_name).strip().lower(), UNKNOWN)
