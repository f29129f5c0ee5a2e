"""The TCD paper's reported numbers (Wang et al., Tables 2-4), printed next to the measured ones.

Keys are (dataset, targets, attack); values follow the tables' columns. ``None`` marks a cell the
paper's text does not give legibly (Table 4 has garbled rows).
"""

from __future__ import annotations

Row = tuple["float | None", ...]

# Table 3 (target HR@50): Origin, Attack, AT, RAT, TCD
TABLE3: dict[tuple[str, str, str], Row] = {
    ("filmtrust", "random", "average"): (0.1617, 0.1005, 0.0961, 0.1001, 0.1093),
    ("filmtrust", "random", "random"): (0.1702, 0.1213, 0.1187, 0.1257, 0.1123),
    ("filmtrust", "random", "aush"): (0.1629, 0.1403, 0.1345, 0.1454, 0.2204),
    ("filmtrust", "random", "pga"): (0.1574, 0.1031, 0.1008, 0.1075, 0.1101),
    ("filmtrust", "random", "tna"): (0.1628, 0.5463, 0.5346, 0.5489, 0.4086),
    ("filmtrust", "unpopular", "average"): (0.0000, 0.0016, 0.0010, 0.0008, 0.0009),
    ("filmtrust", "unpopular", "random"): (0.0000, 0.0016, 0.0020, 0.0019, 0.0016),
    ("filmtrust", "unpopular", "aush"): (0.0000, 0.0323, 0.0284, 0.0330, 0.0024),
    ("filmtrust", "unpopular", "pga"): (0.0000, 0.0012, 0.0015, 0.0016, 0.0009),
    ("filmtrust", "unpopular", "tna"): (0.0000, 0.4276, 0.4251, 0.4444, 0.0416),
    ("ml-100k", "random", "average"): (0.0233, 0.1579, 0.1741, 0.1525, 0.0340),
    ("ml-100k", "random", "random"): (0.0234, 0.0956, 0.0932, 0.0889, 0.0353),
    ("ml-100k", "random", "aush"): (0.0233, 0.2819, 0.2665, 0.2773, 0.0355),
    ("ml-100k", "random", "pga"): (0.0237, 0.1583, 0.1654, 0.1471, 0.0385),
    ("ml-100k", "random", "tna"): (0.0244, 0.2355, 0.2411, 0.2369, 0.0334),
    ("ml-100k", "unpopular", "average"): (0.0000, 0.1694, 0.1796, 0.1421, 0.0009),
    ("ml-100k", "unpopular", "random"): (0.0000, 0.1105, 0.1277, 0.0965, 0.0010),
    ("ml-100k", "unpopular", "aush"): (0.0000, 0.1478, 0.1869, 0.1714, 0.0009),
    ("ml-100k", "unpopular", "pga"): (0.0000, 0.3486, 0.4656, 0.4108, 0.0015),
    ("ml-100k", "unpopular", "tna"): (0.0000, 0.3011, 0.3624, 0.2986, 0.0015),
    ("ml-1m", "random", "average"): (0.0000, 0.2390, 0.1547, 0.2364, 0.0048),
    ("ml-1m", "random", "random"): (0.0000, 0.0568, 0.0455, 0.0517, 0.0072),
    ("ml-1m", "random", "aush"): (0.0000, 0.2829, 0.1395, 0.2518, 0.0031),
    ("ml-1m", "random", "pga"): (0.0000, 0.1027, 0.0832, 0.0968, 0.0191),
    ("ml-1m", "random", "tna"): (0.0000, 0.2622, 0.1663, 0.2403, 0.0042),
    ("ml-1m", "unpopular", "average"): (0.0000, 0.8604, 0.8593, 0.8633, 0.0309),
    ("ml-1m", "unpopular", "random"): (0.0000, 0.6513, 0.6450, 0.6064, 0.0254),
    ("ml-1m", "unpopular", "aush"): (0.0000, 0.9056, 0.8845, 0.8999, 0.0353),
    ("ml-1m", "unpopular", "pga"): (0.0000, 0.8577, 0.8501, 0.8498, 0.0236),
    ("ml-1m", "unpopular", "tna"): (0.0000, 0.8654, 0.8525, 0.8650, 0.0269),
}

# Table 4 (test HR@50): Origin, Attack, AT, RAT, TCD
TABLE4: dict[tuple[str, str, str], Row] = {
    ("filmtrust", "random", "average"): (None, None, None, None, 0.8640),
    ("filmtrust", "random", "random"): (None, None, None, None, 0.8635),
    ("filmtrust", "random", "aush"): (0.8252, 0.8240, 0.8170, 0.8193, 0.8660),
    ("filmtrust", "random", "pga"): (0.8257, 0.8222, 0.8046, 0.8181, 0.8643),
    ("filmtrust", "random", "tna"): (0.8264, 0.8079, 0.7840, 0.8021, 0.8639),
    ("filmtrust", "unpopular", "aush"): (0.8256, 0.8196, 0.8053, 0.8184, 0.8639),
    ("filmtrust", "unpopular", "pga"): (0.8266, 0.8212, 0.8088, 0.8205, 0.8636),
    ("filmtrust", "unpopular", "tna"): (0.8273, 0.8054, 0.7824, 0.8002, 0.8622),
    ("ml-100k", "random", "average"): (None, None, None, None, 0.2875),
    ("ml-100k", "random", "random"): (0.1988, 0.2025, 0.2003, 0.2005, 0.2898),
    ("ml-100k", "random", "aush"): (0.1998, 0.1978, 0.1894, 0.1940, 0.2824),
    ("ml-100k", "random", "pga"): (0.2005, 0.1960, 0.1872, 0.1920, 0.2851),
    ("ml-100k", "random", "tna"): (0.1995, 0.1990, 0.1933, 0.1967, 0.2897),
    ("ml-100k", "unpopular", "random"): (0.1969, 0.2058, 0.1973, 0.2003, 0.2804),
    ("ml-100k", "unpopular", "aush"): (0.2007, 0.1971, 0.1904, 0.1951, 0.2797),
    ("ml-100k", "unpopular", "pga"): (0.2022, 0.1887, 0.1848, 0.1905, 0.2858),
    ("ml-100k", "unpopular", "tna"): (0.2003, 0.1970, 0.1873, 0.1911, 0.2785),
    ("ml-1m", "random", "average"): (0.0834, 0.0748, 0.0542, 0.0718, None),
    ("ml-1m", "random", "random"): (0.0844, 0.0877, 0.0850, 0.0860, 0.1097),
    ("ml-1m", "random", "aush"): (0.0837, 0.0733, 0.0523, 0.0689, 0.1105),
    ("ml-1m", "random", "pga"): (0.0837, 0.0842, 0.0805, 0.0818, 0.1092),
    ("ml-1m", "random", "tna"): (0.0827, 0.0748, 0.0540, 0.0713, 0.1101),
    ("ml-1m", "unpopular", "average"): (None, None, None, None, 0.1094),
    ("ml-1m", "unpopular", "random"): (0.0833, 0.0827, 0.0816, 0.0830, 0.1097),
    ("ml-1m", "unpopular", "aush"): (0.0832, 0.0685, 0.0448, 0.0639, 0.1103),
    ("ml-1m", "unpopular", "pga"): (0.0831, 0.0774, 0.0731, 0.0767, 0.1105),
    ("ml-1m", "unpopular", "tna"): (0.0846, 0.0743, 0.0539, 0.0719, 0.1096),
}

# Table 2 (attack HR@50 of the undefended MF): Origin, then knowledge cost 0.2, 0.4, 0.6, 0.8, 1.0
TABLE2_COSTS = (0.2, 0.4, 0.6, 0.8, 1.0)
TABLE2: dict[tuple[str, str, str], Row] = {
    ("filmtrust", "random", "average"): (0.1617, 0.0889, 0.1005, 0.1612, 0.1222, 0.1303),
    ("filmtrust", "random", "random"): (0.1702, 0.1376, 0.1213, 0.1622, 0.1214, 0.1404),
    ("filmtrust", "random", "aush"): (0.1629, 0.1132, 0.1403, 0.1625, 0.2540, 0.2675),
    ("filmtrust", "random", "pga"): (0.1574, 0.0983, 0.1031, 0.1625, 0.1471, 0.1396),
    ("filmtrust", "random", "tna"): (0.1628, 0.5619, 0.5463, 0.1446, 0.5435, 0.3380),
    ("filmtrust", "unpopular", "average"): (0.0000, 0.0016, 0.0022, 0.0013, 0.0017, 0.0024),
    ("filmtrust", "unpopular", "random"): (0.0000, 0.0034, 0.0019, 0.0012, 0.0028, 0.0023),
    ("filmtrust", "unpopular", "aush"): (0.0000, 0.0152, 0.0296, 0.0285, 0.0283, 0.0461),
    ("filmtrust", "unpopular", "pga"): (0.0000, 0.0028, 0.0013, 0.0040, 0.0049, 0.0080),
    ("filmtrust", "unpopular", "tna"): (0.0000, 0.3054, 0.4059, 0.1839, 0.0899, 0.0807),
    ("ml-100k", "random", "average"): (0.0233, 0.1829, 0.1579, 0.2193, 0.2237, 0.2209),
    ("ml-100k", "random", "random"): (0.0234, 0.0519, 0.0956, 0.0812, 0.1099, 0.0870),
    ("ml-100k", "random", "aush"): (0.0233, 0.1676, 0.2819, 0.3112, 0.3667, 0.3013),
    ("ml-100k", "random", "pga"): (0.0237, 0.0855, 0.1583, 0.1673, 0.1194, 0.1667),
    ("ml-100k", "random", "tna"): (0.0244, 0.0735, 0.2355, 0.2786, 0.2512, 0.2714),
    ("ml-100k", "unpopular", "average"): (0.0000, 0.0255, 0.1572, 0.5094, 0.5943, 0.4694),
    ("ml-100k", "unpopular", "random"): (0.0000, 0.1101, 0.1056, 0.1186, 0.0906, 0.0874),
    ("ml-100k", "unpopular", "aush"): (0.0000, 0.0756, 0.2320, 0.7809, 0.7942, 0.8150),
    ("ml-100k", "unpopular", "pga"): (0.0000, 0.4558, 0.2828, 0.3912, 0.3113, 0.2809),
    ("ml-100k", "unpopular", "tna"): (0.0000, 0.6925, 0.3934, 0.6932, 0.5628, 0.7511),
}
