# Writes OUT, a C++ header defining `constexpr char NAME[]`: the bytes of IN and a terminating zero.
# A source kiln writes out verbatim (the Python model code of an export) is built into the binary
# this way, so that any build, installed or not, has it without finding the source tree. Run at
# build time when IN changes; what includes OUT recompiles only when the bytes do.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUT}.tmp" "// Generated from ${IN} by cmake/EmbedText.cmake: do not edit.\n"
                        "constexpr char ${NAME}[] = {${bytes}0};\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
