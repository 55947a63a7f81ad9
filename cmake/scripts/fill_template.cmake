# fill_template.cmake — cmake -DTEMPLATE=... -DPLACEHOLDER=... -DCONTENT=... -DOUTPUT=... -P
# Writes TEMPLATE with the line @PLACEHOLDER@ replaced by the file CONTENT (a generated part of
# an installed file, such as the completion's command arrays).
file(READ ${TEMPLATE} text)
file(READ ${CONTENT} content)
string(FIND "${text}" "@${PLACEHOLDER}@" at)
if(at LESS 0)
  message(FATAL_ERROR "${TEMPLATE} has no @${PLACEHOLDER}@")
endif()
string(REPLACE "@${PLACEHOLDER}@\n" "${content}" text "${text}")
file(WRITE ${OUTPUT} "${text}")
