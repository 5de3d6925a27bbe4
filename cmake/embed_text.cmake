# Writes the bytes of INPUT as a NUL-terminated C array named SYMBOL into
# OUTPUT. Hex bytes avoid any quoting problem with the text.
file(READ "${INPUT}" content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${content}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n  " bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
  "/* Generated from ${INPUT} by cmake/embed_text.cmake. Do not edit. */\n"
  "const char ${SYMBOL}[] = {\n  ${bytes}0x00\n};\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
