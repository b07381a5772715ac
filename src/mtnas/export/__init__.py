"""Export of searched subnets as plain modules."""
