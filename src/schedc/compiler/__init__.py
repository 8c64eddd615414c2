"""Stage 4, compilation: schedule expressions lowered to structure + numbers and built as jnp
functions, and one jitted chunk function per distinct phase signature.

(`compiler`, not `compile`: `schedc.compile` is the public function, and a subpackage of that
name would shadow it.)"""
