"""Generated from proto/pm/v1 by tools/gen_proto.py; do not edit."""
