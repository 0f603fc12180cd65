/*
 * version.h
 *		The library's version and the check that the installed objects
 *		(the catalog) are the ones it was built for.
 */
#ifndef MB_VERSION_H
#define MB_VERSION_H

/* The extension version this library implements: msgbilling.control's. */
#define MB_LIBRARY_VERSION "1.1"

extern void mb_version_init(void);
extern void mb_require_catalog(void);

#endif							/* MB_VERSION_H */
