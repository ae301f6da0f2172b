"""The word pools of the synthetic tool-use data (chatloop/data/tool_synthetic.py): templates, names,
objects, cities and facts, EN and 中文. `TRAIN` and `HELDOUT` share none of their templates, names,
objects or cities, so the held-out set measures what was learnt, not what was seen. All written for
this project."""

from dataclasses import dataclass

from chatloop.data.tool_plain import PLAIN_EN, PLAIN_ZH


@dataclass(frozen=True)
class Pool:
    names: dict  # lang -> [name]
    objects: dict  # lang -> [(noun, measure word)]
    word: dict  # lang -> [{"expr", "q", "a"}]: slots name, obj, m, a, b, c (and v in "a")
    shapes: list  # bare expressions, "{}" per number
    bare: dict  # lang -> [(question, answer)] with {e} (expression) and {v}
    whole: bool  # only whole, non-negative results
    cities: list  # (English, 中文, IANA zone)
    time_q: dict  # lang -> [question with {city}]
    facts: dict  # lang -> [{"topic", "query", "fact" with {v}, "values"}]
    files: list
    search_q: dict  # lang -> [question with {topic}]
    plain: dict  # lang -> [(question, answer)] (training) or [(question, [expected texts])] (held-out)


TRAIN = Pool(
    names={"en": ["Tom", "Anna", "Liam", "Sofia", "Ben", "Mia", "Omar", "Chloe", "Ravi", "Emma", "Lucas", "Nora"],
           "zh": ["小明", "小红", "小刚", "小丽", "王磊", "李娜", "张伟", "陈静", "刘洋", "小军", "丁丁", "美美"]},
    objects={"en": [("apples", ""), ("pencils", ""), ("books", ""), ("stickers", ""), ("cookies", ""),
                    ("marbles", ""), ("oranges", ""), ("cards", ""), ("candies", ""), ("toy cars", "")],
             "zh": [("苹果", "个"), ("铅笔", "支"), ("书", "本"), ("贴纸", "张"), ("饼干", "块"), ("弹珠", "颗"),
                    ("橘子", "个"), ("卡片", "张"), ("糖果", "颗"), ("梨", "个"), ("桃子", "个")]},
    word={
        "en": [
            {"expr": "{a}-{b}+{c}", "q": "{name} has {a} {obj}. {name} gives away {b} and then gets {c} more. "
             "How many {obj} does {name} have now?", "a": "{name} now has {v} {obj}."},
            {"expr": "{a}-{b}+{c}", "q": "{name} had {a} {obj}, ate {b} of them and bought {c} more. "
             "How many are there now?", "a": "There are {v} {obj} now."},
            {"expr": "{a}*{b}", "q": "{name} buys {a} packs of {obj} with {b} in each pack. How many {obj} is that?",
             "a": "That is {v} {obj} in total."},
            {"expr": "{a}/{b}", "q": "{name} shares {a} {obj} equally among {b} friends. "
             "How many does each friend get?", "a": "Each friend gets {v} {obj}."},
            {"expr": "{a}+{b}+{c}", "q": "One box has {a} {obj}, another has {b} and a third has {c}. "
             "How many {obj} are there altogether?", "a": "There are {v} {obj} altogether."},
            {"expr": "{a}*{b}-{c}", "q": "{name} sells {a} {obj} at {b} dollars each and then pays {c} dollars "
             "for rent. How much money is left?", "a": "{name} has {v} dollars left."},
            {"expr": "({a}+{b})*{c}", "q": "{name} reads {a} pages in the morning and {b} in the evening, "
             "every day for {c} days. How many pages is that?", "a": "{name} reads {v} pages."},
            {"expr": "{a}-{b}-{c}", "q": "A shelf holds {a} {obj}. {name} takes {b} and a friend takes {c}. "
             "How many are left on the shelf?", "a": "{v} {obj} are left."},
        ],
        "zh": [
            {"expr": "{a}-{b}+{c}", "q": "{name}有{a}{m}{obj}，送给同学{b}{m}，后来又得到{c}{m}。{name}现在有多少{m}{obj}？",
             "a": "{name}现在有{v}{m}{obj}。"},
            {"expr": "{a}-{b}+{c}", "q": "{name}有{a}{m}{obj}，吃了{b}{m}，又买了{c}{m}，现在一共有多少{m}{obj}？",
             "a": "现在一共有{v}{m}{obj}。"},
            {"expr": "{a}-{b}+{c}", "q": "{name}原来有{a}{m}{obj}，用掉了{b}{m}，又买了{c}{m}，还有几{m}？",
             "a": "{name}还有{v}{m}{obj}。"},
            {"expr": "{a}*{b}", "q": "{name}买了{a}盒{obj}，每盒{b}{m}，一共多少{m}？", "a": "一共有{v}{m}{obj}。"},
            {"expr": "{a}/{b}", "q": "{a}{m}{obj}平均分给{b}个小朋友，每人分到几{m}？", "a": "每人分到{v}{m}{obj}。"},
            {"expr": "{a}+{b}+{c}", "q": "书架第一层有{a}{m}{obj}，第二层有{b}{m}，第三层有{c}{m}，一共有多少{m}？",
             "a": "一共有{v}{m}{obj}。"},
            {"expr": "{a}*{b}-{c}", "q": "{name}每天存{b}元，存了{a}天，然后花了{c}元，还剩多少元？", "a": "{name}还剩{v}元。"},
            {"expr": "{a}-{b}-{c}", "q": "{name}有{a}{m}{obj}，吃了{b}{m}，又分给妹妹{c}{m}，还剩几{m}？",
             "a": "{name}还剩{v}{m}{obj}。"},
        ],
    },
    shapes=["{}*{}", "{}+{}*{}", "({}+{})*{}", "{}/{}", "{}-{}+{}", "{}*{}+{}", "{}**2"],
    bare={"en": [("What is {e}?", "{e} = {v}."), ("Calculate {e}.", "The result is {v}."),
                 ("Compute {e} for me.", "{e} equals {v}.")],
          "zh": [("{e} 等于多少？", "{e} = {v}。"), ("计算 {e}", "结果是{v}。"), ("帮我算一下 {e}", "{e} 的结果是{v}。")]},
    whole=False,
    cities=[("Tokyo", "东京", "Asia/Tokyo"), ("Shanghai", "上海", "Asia/Shanghai"), ("Beijing", "北京", "Asia/Shanghai"),
            ("London", "伦敦", "Europe/London"), ("New York", "纽约", "America/New_York"),
            ("Paris", "巴黎", "Europe/Paris"), ("Sydney", "悉尼", "Australia/Sydney"), ("Berlin", "柏林", "Europe/Berlin"),
            ("Moscow", "莫斯科", "Europe/Moscow"), ("Dubai", "迪拜", "Asia/Dubai"), ("Singapore", "新加坡", "Asia/Singapore"),
            ("Los Angeles", "洛杉矶", "America/Los_Angeles"), ("Chicago", "芝加哥", "America/Chicago"),
            ("Toronto", "多伦多", "America/Toronto"), ("Seoul", "首尔", "Asia/Seoul"), ("Cairo", "开罗", "Africa/Cairo"),
            ("Madrid", "马德里", "Europe/Madrid"), ("Mumbai", "孟买", "Asia/Kolkata"),
            ("São Paulo", "圣保罗", "America/Sao_Paulo"), ("Amsterdam", "阿姆斯特丹", "Europe/Amsterdam")],
    time_q={"en": ["What time is it in {city} right now?", "What's the current time in {city}?",
                   "Can you tell me the local time in {city}?", "I need to call a friend in {city}. What time is it there?",
                   "Is it late in {city} now? What's the time there?"],
            "zh": ["{city}现在几点？", "现在{city}是几点钟？", "请告诉我{city}的当地时间。", "我想给{city}的朋友打电话，那边现在几点了？"]},
    facts={"en": [
        {"topic": "the project deadline", "query": "project deadline", "fact": "The project deadline is {v}.",
         "values": ["March 14", "June 2", "October 30", "December 1", "April 21"]},
        {"topic": "the budget", "query": "budget", "fact": "The total budget is {v} dollars.",
         "values": ["12,000", "8,500", "45,000", "3,200", "150,000"]},
        {"topic": "the meeting room", "query": "meeting room", "fact": "The weekly meeting is in room {v}.",
         "values": ["B204", "A12", "C3-07", "Orion", "Lakeview"]},
        {"topic": "the contact person", "query": "contact person", "fact": "The contact person is {v}.",
         "values": ["Dana Fisher", "Marco Ruiz", "Helen Park", "Sam Okafor", "Lena Novak"]},
        {"topic": "the rent", "query": "monthly rent", "fact": "The monthly rent is {v} dollars.",
         "values": ["1,200", "950", "2,400", "1,780"]},
        {"topic": "the warranty", "query": "warranty period", "fact": "The warranty lasts {v}.",
         "values": ["two years", "18 months", "five years", "90 days"]},
        {"topic": "the flight", "query": "flight number", "fact": "The flight is {v}.",
         "values": ["LH 455 at 09:40", "BA 117 at 18:05", "AF 023 at 13:15"]},
    ], "zh": [
        {"topic": "项目截止日期", "query": "项目截止日期", "fact": "项目截止日期是{v}。", "values": ["3月14日", "6月2日", "10月30日", "12月1日"]},
        {"topic": "预算", "query": "预算", "fact": "总预算为{v}元。", "values": ["12000", "8500", "45000", "3200"]},
        {"topic": "会议室", "query": "会议室", "fact": "每周例会在{v}会议室举行。", "values": ["B204", "A12", "星河", "湖景"]},
        {"topic": "联系人", "query": "联系人", "fact": "联系人是{v}。", "values": ["王芳", "李强", "赵敏", "陈晨"]},
        {"topic": "房租", "query": "房租", "fact": "每月房租是{v}元。", "values": ["3200", "2500", "4800"]},
        {"topic": "保修期", "query": "保修期", "fact": "保修期为{v}。", "values": ["两年", "十八个月", "五年"]},
        {"topic": "航班号", "query": "航班", "fact": "航班是{v}。", "values": ["CA1501，09:40起飞", "MU5101，18:05起飞"]},
    ]},
    files=["notes.txt", "report.pdf", "minutes.docx", "plan.md", "contract.pdf", "trip.txt", "会议记录.docx",
           "合同.pdf", "计划.md", "email.eml"],
    search_q={"en": ["What does my document say about {topic}?", "According to the file I uploaded, what is {topic}?",
                     "Can you check my uploaded notes for {topic}?", "In the document I shared, what's {topic}?"],
              "zh": ["我上传的文件里{topic}是什么？", "根据我上传的文档，{topic}是多少？", "帮我在我的文件里查一下{topic}。"]},
    plain={"en": [
        ("Hello!", "Hello! How can I help you today?"),
        ("Hi, how are you?", "I'm doing well, thanks for asking! What can I do for you?"),
        ("Thanks a lot!", "You're welcome! Let me know if there's anything else."),
        ("What is the capital of France?", "The capital of France is Paris."),
        ("Who wrote Hamlet?", "Hamlet was written by William Shakespeare."),
        ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
        ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide (CO2) from the air."),
        ("How many continents are there?", "There are seven continents."),
        ("Write a short poem about the sea.", "Waves roll in with silver light,\nthe sea sings softly through the night."),
        ("Give me a title for a story about a lost dog.", "\"The Long Way Home\""),
        ("Translate 'thank you' into French.", "'Thank you' in French is 'merci'."),
        ("Translate 'good night' into Spanish.", "'Good night' in Spanish is 'buenas noches'."),
        ("What does CPU stand for?", "CPU stands for Central Processing Unit."),
        ("Suggest a healthy breakfast.", "Oatmeal with fruit and a handful of nuts is a healthy breakfast."),
        ("What is photosynthesis, in one sentence?",
         "Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen."),
        ("Tell me a fun fact about octopuses.", "Octopuses have three hearts and blue blood."),
    ] + PLAIN_EN, "zh": [
        ("你好！", "你好！有什么可以帮你的吗？"),
        ("谢谢你的帮助。", "不客气！还有其他问题随时问我。"),
        ("中国的首都是哪里？", "中国的首都是北京。"),
        ("《红楼梦》的作者是谁？", "《红楼梦》的作者是曹雪芹。"),
        ("一年有几个季节？", "一年有四个季节：春、夏、秋、冬。"),
        ("世界上最高的山是哪座？", "世界上最高的山是珠穆朗玛峰。"),
        ("水在多少摄氏度沸腾？", "在标准大气压下，水在100摄氏度沸腾。"),
        ("写一句关于春天的诗。", "春风拂面花满枝，燕子归来正当时。"),
        ("把“早上好”翻译成英文。", "“早上好”的英文是“Good morning”。"),
        ("把“我爱学习”翻译成英文。", "“我爱学习”的英文是“I love learning”。"),
        ("给我的小猫起个名字。", "可以叫它“团子”，可爱又好记。"),
        ("介绍一下熊猫。", "大熊猫是中国特有的动物，主要吃竹子，黑白相间，非常可爱。"),
        ("怎样才能睡得更好？", "保持规律作息，睡前少看手机，卧室保持安静和黑暗。"),
        ("太阳从哪个方向升起？", "太阳从东方升起。"),
    ] + PLAIN_ZH},
)

HELDOUT = Pool(
    names={"en": ["Hugo", "Priya", "Felix", "Ingrid", "Mateo", "Yuki", "Olga", "Tariq"],
           "zh": ["阿强", "晓雯", "周杰", "孙悦", "小雪", "赵鹏"]},
    objects={"en": [("eggs", ""), ("balloons", ""), ("shells", ""), ("tickets", ""), ("bottles", "")],
             "zh": [("鸡蛋", "个"), ("气球", "个"), ("贝壳", "枚"), ("电影票", "张"), ("瓶子", "个")]},
    word={
        "en": [
            {"expr": "{a}+{b}-{c}", "q": "On Monday {name} collected {a} {obj}, on Tuesday {b} more, but lost {c}. "
             "How many {obj} remain?", "a": "{name} has {v} {obj} left."},
            {"expr": "{a}*{b}", "q": "A hall has {a} rows with {b} {obj} in each row. How many {obj} are in the hall?",
             "a": "There are {v} {obj} in the hall."},
            {"expr": "{a}/{b}", "q": "{a} {obj} are packed into bags of {b}. How many bags are needed?",
             "a": "{v} bags are needed."},
            {"expr": "{a}*{b}+{c}", "q": "{name} walks {a} km a day for {b} days and then {c} km more. "
             "What is the total distance?", "a": "The total is {v} km."},
        ],
        "zh": [
            {"expr": "{a}+{b}-{c}", "q": "{name}周一捡了{a}{m}{obj}，周二又捡了{b}{m}，路上丢了{c}{m}，还剩多少{m}？",
             "a": "还剩{v}{m}{obj}。"},
            {"expr": "{a}*{b}", "q": "礼堂里有{a}排{obj}，每排{b}{m}，共有几{m}{obj}？", "a": "共有{v}{m}{obj}。"},
            {"expr": "{a}/{b}", "q": "把{a}{m}{obj}每{b}{m}装一袋，能装几袋？", "a": "能装{v}袋。"},
            {"expr": "{a}*{b}+{c}", "q": "{name}每天跑{a}公里，跑了{b}天，最后一天又多跑了{c}公里，一共跑了多少公里？",
             "a": "一共跑了{v}公里。"},
        ],
    },
    shapes=["{}*{}-{}", "({}-{})*{}", "{}+{}+{}", "{}*{}*{}"],
    bare={"en": [("Please work out {e}.", "{v}."), ("What do you get for {e}?", "You get {v}.")],
          "zh": [("请算出 {e} 的值。", "值是{v}。"), ("{e} 是多少？", "是{v}。")]},
    whole=True,
    cities=[("Rome", "罗马", "Europe/Rome"), ("Bangkok", "曼谷", "Asia/Bangkok"),
            ("Mexico City", "墨西哥城", "America/Mexico_City"), ("Istanbul", "伊斯坦布尔", "Europe/Istanbul"),
            ("Jakarta", "雅加达", "Asia/Jakarta"), ("Nairobi", "内罗毕", "Africa/Nairobi"),
            ("Vancouver", "温哥华", "America/Vancouver"), ("Auckland", "奥克兰", "Pacific/Auckland"),
            ("Lisbon", "里斯本", "Europe/Lisbon"), ("Stockholm", "斯德哥尔摩", "Europe/Stockholm"),
            ("Hong Kong", "香港", "Asia/Hong_Kong"), ("Taipei", "台北", "Asia/Taipei"), ("Denver", "丹佛", "America/Denver"),
            ("Buenos Aires", "布宜诺斯艾利斯", "America/Argentina/Buenos_Aires"), ("Athens", "雅典", "Europe/Athens")],
    time_q={"en": ["Tell me the time in {city} at the moment.", "What hour is it over in {city} now?",
                   "Check the clock in {city} for me."],
            "zh": ["{city}那边现在是什么时间？", "查一下{city}此刻的时间。", "{city}当地现在几点了？"]},
    facts={"en": [], "zh": []},
    files=[],
    search_q={"en": [], "zh": []},
    plain={"en": [
        ("Good morning! Nice to meet you.", []),
        ("Which ocean is the largest?", ["Pacific"]),
        ("Who painted the Mona Lisa?", ["Leonardo", "da Vinci"]),
        ("Translate 'see you tomorrow' into German.", ["morgen"]),
        ("Write two lines about autumn leaves.", []),
    ], "zh": [
        ("晚上好，最近怎么样？", []),
        ("日本的首都是哪里？", ["东京"]),
        ("把“祝你生日快乐”翻译成英文。", ["birthday", "Birthday"]),
        ("长城位于哪个国家？", ["中国"]),
        ("写一句描写秋天的话。", []),
    ]},
)

# The held-out search corpus (what the harness's search_documents searches) and its questions:
# (the file the answer is in, question, texts one of which the answer must contain).
HELDOUT_CORPUS = [
    ("offsite-plan.txt", "The team offsite is in Hallstatt from 12 to 14 May; the bus leaves at 07:30."),
    ("budget-q3.txt", "The approved marketing budget for Q3 is 48,500 euros."),
    ("lease.pdf", "The monthly rent is 1,850 dollars and the lease ends on 31 August 2027."),
    ("recipe.txt", "The dumpling dough uses 500 g flour and 260 ml warm water."),
    ("onboarding.md", "New hires get their laptop from the IT desk on floor 3; the mentor is Greta Holm."),
    ("insurance.pdf", "The car insurance policy number is KX-20417 and renews every January."),
    ("garden.txt", "Water the tomato plants every two days; the fertiliser is added on Sundays."),
    ("release-notes.md", "Version 4.2 of the app adds offline mode and ships on 9 September."),
    ("发布计划.txt", "新版本的发布日期定为10月18日，负责人是王芳。"),
    ("体检报告.txt", "体检结果显示血压为118/76，建议每周运动三次。"),
    ("租房合同.pdf", "押金为6000元，合同期限为两年。"),
    ("旅行安排.docx", "我们的航班是CA1833，早上8点10分从北京起飞。"),
    ("菜谱.txt", "红烧肉需要炖煮90分钟，放两勺冰糖。"),
    ("课程表.md", "周三下午有钢琴课，老师是刘老师。"),
    ("报销说明.txt", "出差报销需要在15个工作日内提交发票。"),
]
HELDOUT_SEARCH = [
    ("offsite-plan.txt", "What time does the bus leave for the offsite, according to my uploaded plan?", ["07:30", "7:30"]),
    ("发布计划.txt", "我上传的发布计划里，新版本哪天发布？", ["10月18日", "10月18"]),
    ("budget-q3.txt", "Look in the budget file I uploaded: how much is the Q3 marketing budget?", ["48,500", "48500"]),
    ("体检报告.txt", "帮我看看我上传的体检报告，血压是多少？", ["118/76"]),
    ("lease.pdf", "When does my lease end? It's in the PDF I uploaded.", ["2027"]),
    ("租房合同.pdf", "我传的租房合同里押金是多少？", ["6000"]),
    ("recipe.txt", "How much flour does the dough need, per the recipe file I gave you?", ["500"]),
    ("旅行安排.docx", "根据我上传的旅行安排，我们的航班号是什么？", ["CA1833"]),
    ("onboarding.md", "Who is my mentor? Check the onboarding notes I uploaded.", ["Greta"]),
    ("菜谱.txt", "我上传的菜谱里，红烧肉要炖多久？", ["90"]),
    ("insurance.pdf", "What's my car insurance policy number? I uploaded the policy.", ["KX-20417"]),
    ("课程表.md", "我上传的课程表上，钢琴课的老师是谁？", ["刘老师", "刘"]),
    ("garden.txt", "From my garden notes file: how often should I water the tomatoes?", ["two days", "2 days"]),
    ("报销说明.txt", "根据我上传的报销说明，发票要在多少天内提交？", ["15"]),
    ("release-notes.md", "According to the release notes I uploaded, what does version 4.2 add?", ["offline"]),
]
# Held-out arithmetic with the calculator NOT offered: answer directly (small enough to do in one's head).
HELDOUT_ABSENT = [
    ("15 乘以 4 等于多少？", "60"), ("What is 12 + 30?", "42"), ("100 减去 35 是多少？", "65"),
    ("What is 9 times 7?", "63"), ("48 除以 6 等于几？", "8"),
]

SYSTEMS = {"en": ["You are a helpful assistant.", "You are a concise assistant. Use tools when they help."],
           "zh": ["你是一个乐于助人的助手。", "你是一个简洁的助手，需要时使用工具。"]}
CANNOT = {
    "time": {"en": ["I can't check the current time here: no clock tool is available in this chat."],
             "zh": ["抱歉，这里没有可以查询当前时间的工具，我无法告诉你现在的准确时间。"]},
    "search": {"en": ["I can't read your documents here: no document search tool is available in this chat."],
               "zh": ["抱歉，这里没有可以搜索你文件的工具，我无法查看你上传的文档。"]},
}
TIME_NO_CITY = {"en": ["What's the current UTC time?", "What time is it in UTC?"], "zh": ["现在的UTC时间是几点？"]}
TIME_ANSWERS = {"en": ["It is {hm} in {city} right now ({date}).", "The local time in {city} is {hm}.",
                       "Right now it's {hm} in {city}."],
                "zh": ["{city}现在是{hm}（{date}）。", "{city}当地时间是{hm}。"]}
CITE = {"en": ["{fact} [{n}]", "Your document says: {fact} [{n}]"], "zh": ["{fact}[{n}]", "根据你的文件，{fact}[{n}]"]}
