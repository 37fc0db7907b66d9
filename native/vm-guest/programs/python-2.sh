# Interpreter start and other imports: email, http.client, xml.etree, decimal, datetime.
python3 -c 'import email.parser, http.client, xml.etree.ElementTree as ET, decimal, datetime; r = ET.fromstring("<a>" + "<b n=\"1\"/>" * 500 + "</a>"); m = email.parser.Parser().parsestr("Subject: hi\n\nbody"); print(len(r), m["Subject"], decimal.Decimal(1) / 7, datetime.date(2026, 12, 2).isoformat())'
