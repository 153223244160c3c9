"""medxfer: in-domain transfer learning for medical images, stage by stage."""

__version__ = "0.1.0"
